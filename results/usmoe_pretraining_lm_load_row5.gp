set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row5.png.tmp.22593'
$m << EOD
0.146647 0.0856934 0.0876465 0.124349 0.0977376 0.120524 0.18986 0.147542
0.0863444 0.163656 0.108724 0.15625 0.14681 0.125407 0.0878906 0.124919
EOD
set title "USMoE per position (authors' LM code), k=1.5: load (last\nepoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
