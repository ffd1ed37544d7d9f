set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/usmoe_pretraining_lm_load_row4.png.tmp.25646'
$m << EOD
0.136914 0.134326 0.163721 0.100732 0.109229 0.162158 0.0943115 0.0986084
0.154834 0.0992676 0.0696777 0.185474 0.120898 0.0720215 0.178296 0.119531
EOD
set title "USMoE, k=1: load (last epoch, first seed)"
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
