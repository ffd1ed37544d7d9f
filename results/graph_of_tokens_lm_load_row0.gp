set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/graph_of_tokens_lm_load_row0.png.tmp.12178'
$m << EOD
0.148975 0.150342 0.126013 0.167126 0.0658936 0.088208 0.139697 0.113745
0.121533 0.141895 0.117078 0.124194 0.0655518 0.170044 0.148376 0.111328
EOD
set title "SMoE (token choice): load (last epoch, first seed)"
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
