set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_load_row2.png.tmp.12178'
$m << EOD
0.139771 0.117017 0.148511 0.104431 0.110449 0.130066 0.123547 0.126208
0.121033 0.185376 0.0759521 0.13717 0.0325806 0.129712 0.111182 0.206995
EOD
set title "Attention-Aware SMoE: load (last epoch, first seed)"
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
